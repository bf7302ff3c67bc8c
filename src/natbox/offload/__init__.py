"""The kernel data path for established flows (issue #16): natbox decides, the kernel forwards.

entry.py (pure: plain data, no I/O; the core may import it) turns the engine's compiled-flow plans
(engine/fastpath.FlowPlan) into BPF map entries; datapath.py (an adapter: clang, tc, the bpf() system
call through bpf.py) builds natbox_offload.bpf.c, attaches it on clsact ingress and fills its maps.
"""
