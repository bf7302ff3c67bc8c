"""`-m bpf --bytecode "N,code jt jf k,..."` rev 1 (libxt_bpf.c, net/netfilter/xt_bpf.c `bpf_mt_v1`).

The kernel runs the classic BPF program on the skb, whose data starts at the IP header at the IPv4
hooks, and matches when it returns non-zero. natbox interprets the classic instruction set as
net/core/filter.c defines it (`bpf_check_classic` at load time: known opcodes, jumps inside the program,
a constant divisor that is not 0, scratch slots below 16, a final RET): loads outside the packet, and
division by a zero register, end the program with 0. Ancillary loads (`SKF_AD_OFF + ...`) and the
`SKF_NET_OFF`/`SKF_LL_OFF` areas read nothing natbox models and also end the program with 0.
`--object-pinned` (an eBPF object in bpffs) is refused: natbox has no BPF file system.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Bpf", "bpf_check_classic", "bpf_run"]

XT_BPF_MAX_NUM_INSTR: Final = 64
BPF_MEMWORDS: Final = 16
Insn = tuple[int, int, int, int]

# instruction classes and fields (uapi linux/bpf_common.h)
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
K, X, A = 0x00, 0x08, 0x10
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
TAX, TXA = 0x00, 0x80
_SIZES: Final = {W: 4, H: 2, B: 1}

_VALID: Final = {
    LD | W | ABS, LD | H | ABS, LD | B | ABS, LD | W | IND, LD | H | IND, LD | B | IND, LD | IMM, LD | MEM,
    LD | W | LEN, LDX | W | LEN, LDX | IMM, LDX | MEM, LDX | B | MSH, ST, STX, RET | K, RET | A,
    MISC | TAX, MISC | TXA, JMP | JA,
    *(ALU | op | src for op in (ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR) for src in (K, X)), ALU | NEG,
    *(JMP | op | src for op in (JEQ, JGT, JGE, JSET) for src in (K, X)),
}


def bpf_check_classic(prog: tuple[Insn, ...]) -> bool:
    """`bpf_check_classic` (net/core/filter.c): what the kernel accepts at checkentry."""
    n = len(prog)
    if not 0 < n <= 4096:
        return False
    for pc, (code, jt, jf, k) in enumerate(prog):
        if code not in _VALID:
            return False
        if code in (ALU | DIV | K, ALU | MOD | K) and k == 0:
            return False
        if code in (ALU | LSH | K, ALU | RSH | K) and k >= 32:
            return False
        if code in (LD | MEM, LDX | MEM, ST, STX) and k >= BPF_MEMWORDS:
            return False
        if code == JMP | JA:
            if k >= n - pc - 1:
                return False
        elif code & 0x07 == JMP and (pc + jt + 1 >= n or pc + jf + 1 >= n):
            return False
    return prog[-1][0] & 0x07 == RET


def _load(data: bytearray, off: int, size: int) -> int | None:
    if off < 0 or off + size > len(data):
        return None
    return int.from_bytes(data[off:off + size], "big")


def bpf_run(prog: tuple[Insn, ...], data: bytearray) -> int:
    """Run a checked classic BPF program on `data`; its return value (0 on a failed load)."""
    a = x = 0
    mem = [0] * BPF_MEMWORDS
    pc = 0
    mask = 0xFFFFFFFF
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls in (LD, LDX):
            mode = code & 0xE0
            if mode in (ABS, IND, MSH):
                off = k if mode != IND else (x + k) & mask
                if off >= 0x80000000:
                    return 0  # negative offsets: SKF_AD_OFF/SKF_NET_OFF/SKF_LL_OFF areas
                v = _load(data, off, 1 if mode == MSH else _SIZES[code & 0x18])
                if v is None:
                    return 0
                if mode == MSH:
                    x = (v & 0x0F) << 2
                else:
                    a = v
            elif mode == IMM:
                a, x = (k, x) if cls == LD else (a, k)
            elif mode == MEM:
                a, x = (mem[k], x) if cls == LD else (a, mem[k])
            else:  # LEN
                a, x = (len(data), x) if cls == LD else (a, len(data))
        elif cls == ST:
            mem[k] = a
        elif cls == STX:
            mem[k] = x
        elif cls == ALU:
            op = code & 0xF0
            src = x if code & X else k
            if op == NEG:
                a = (-a) & mask
            elif op in (DIV, MOD):
                if src == 0:
                    return 0
                a = a // src if op == DIV else a % src
            elif op == LSH:
                a = (a << (src & 31)) & mask
            elif op == RSH:
                a >>= src & 31
            else:
                a = {ADD: a + src, SUB: a - src, MUL: a * src, OR: a | src, AND: a & src, XOR: a ^ src}[op] & mask
        elif cls == JMP:
            op = code & 0xF0
            if op == JA:
                pc += k
                continue
            src = x if code & X else k
            taken = {JEQ: a == src, JGT: a > src, JGE: a >= src, JSET: bool(a & src)}[op]
            pc += jt if taken else jf
        elif cls == RET:
            return a if code & 0x18 == A else k
        elif code & 0xF8 == TXA:  # MISC
            a = x
        else:  # MISC TAX
            x = a


class Bpf(Match):
    name = "bpf"
    revision = 1
    options = (Opt("bytecode", 1), Opt("object-pinned", 1))

    def __init__(self) -> None:
        self.prog: tuple[Insn, ...] = ()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "object-pinned":
            raise RulesError("bpf: --object-pinned is not supported by natbox (no BPF file system); "
                             "use --bytecode")
        if opt != "bytecode":
            super().parse(opt, arg, inverted, rule)
        self.prog = parse_bytecode(arg or "")

    def final_check(self, rule: Rule) -> None:
        if not self.prog:
            raise RulesError("bpf: missing --bytecode parameter")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if not bpf_check_classic(self.prog):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _code(self) -> str:
        return ",".join(f"{c} {jt} {jf} {k}" for c, jt, jf, k in self.prog)

    def save(self) -> str:
        return f' --bytecode "{len(self.prog)},{self._code()}"'

    def print_list(self, numeric: bool) -> str:
        # bpf_print_code ends the list with "%c" of '\0' where save gets '"': -L carries a NUL byte
        return "match bpf " + self._code() + "\x00"

    def compile(self) -> MatchFn:
        prog = self.prog

        def bpf_mt(skb: Skb, ctx: XtContext) -> bool:
            return bpf_run(prog, skb.data) != 0

        return bpf_mt


def parse_bytecode(text: str) -> tuple[Insn, ...]:
    """`bpf_parse_string` with ',' as the separator."""
    head, sep, rest = text.partition(",")
    if not sep or not head.strip().isdigit() or int(head) > 0xFFFF:
        raise RulesError("bpf: error parsing program length")
    n = int(head)
    if not n:
        raise RulesError("bpf: illegal zero length program")
    if n > XT_BPF_MAX_NUM_INSTR:
        raise RulesError("bpf: number of instructions exceeds maximum")
    prog: list[Insn] = []
    for i, token in enumerate(t for t in rest.split(",") if t):
        if i >= n:
            raise RulesError("bpf: real program length exceeds the encoded length parameter")
        fields = token.split()
        if len(fields) < 4 or not all(f.isdigit() for f in fields[:4]):
            raise RulesError(f"bpf: error at instr {i}")
        code, jt, jf, k = (int(f) for f in fields[:4])
        prog.append((code & 0xFFFF, jt & 0xFF, jf & 0xFF, k & 0xFFFFFFFF))
    if len(prog) != n:
        raise RulesError("bpf: parsed program length is less than the encoded length parameter")
    return tuple(prog)
