/* Network <-> host byte order, either way, for the data path and the
 * plain-memory headers the fuzzers share. DPDK's x86 versions are inline
 * asm volatile, which the compiler may neither merge nor move: the same
 * field converted twice costs twice. */
#ifndef NVGW_BYTEORDER_H
#define NVGW_BYTEORDER_H

#include <stdint.h>
#include <rte_byteorder.h>

#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
#define nvgw_be16(x) ((uint16_t)__builtin_bswap16(x))
#define nvgw_be32(x) ((uint32_t)__builtin_bswap32(x))
#else
#define nvgw_be16(x) ((uint16_t)(x))
#define nvgw_be32(x) ((uint32_t)(x))
#endif

#endif
