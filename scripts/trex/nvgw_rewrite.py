"""TRex STL profile: nvgw benchmark 'rewrite' workload (see nvgw_trex.py).

    trex-console> start -f nvgw_rewrite.py -t records=1000000,streams=16,size=64 -m 10mpps
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nvgw_trex import NvgwProfile  # noqa: E402


class NvgwRewrite(NvgwProfile):
    kind = "rewrite"


def register():
    return NvgwRewrite()
