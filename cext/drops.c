/* Drop reason names and sentences, from the one list in drops.def. */
#include "nvgw.h"

const char *const nvgw_drop_names[NVGW_DROP_MAX] = {
#define NVGW_DROP(name, text) #name,
#include "drops.def"
#undef NVGW_DROP
};

const char *const nvgw_drop_texts[NVGW_DROP_MAX] = {
#define NVGW_DROP(name, text) text,
#include "drops.def"
#undef NVGW_DROP
};
