"""The kernel's NOPs: the P6 multi-byte forms, and collapsing runs of one-byte NOPs into them
as the kernel's `optimize_nops` does after patching a site."""

from __future__ import annotations

#: The kernel's x86_nops[] (P6 NOPs; every 64-bit kernel since 5.13, and the common choice
#: before), indexed by length.
P6_NOPS: tuple[bytes, ...] = (
    b"",
    b"\x90",
    b"\x66\x90",
    b"\x0f\x1f\x00",
    b"\x0f\x1f\x40\x00",
    b"\x0f\x1f\x44\x00\x00",
    b"\x66\x0f\x1f\x44\x00\x00",
    b"\x0f\x1f\x80\x00\x00\x00\x00",
    b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
)


def is_nop_run(b: bytes, bits: int) -> bool:
    """Whether `b` is wholly P6 NOPs, as `optimize_nops` leaves a site's padding."""
    pos = 0
    while pos < len(b):
        for n in range(min(8, len(b) - pos), 0, -1):
            if b[pos : pos + n] == P6_NOPS[n]:
                pos += n
                break
        else:
            return False
    return True


def nops(length: int) -> bytes:
    """`length` bytes of the kernel's NOPs: longest-first P6 NOPs (8-byte chunks beyond 8)."""
    out = b""
    while length > 0:
        n = min(length, 8)
        out += P6_NOPS[n]
        length -= n
    return out


def optimize_nops(code: bytes, address: int, bits: int) -> bytes:
    """Collapse runs of single-byte 0x90 instructions into multi-byte NOPs."""
    from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

    md = Cs(CS_ARCH_X86, CS_MODE_64 if bits == 64 else CS_MODE_32)
    out = bytearray()
    run = 0
    pos = 0
    for insn in md.disasm(code, address):
        if bytes(insn.bytes) == b"\x90":
            run += 1
        else:
            out += nops(run)
            run = 0
            out += insn.bytes
        pos += insn.size
    out += nops(run)
    out += code[pos:]  # undecodable tail: leave as is
    return bytes(out)
