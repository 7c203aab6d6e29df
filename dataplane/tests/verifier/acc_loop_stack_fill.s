; a loop filling 32 stack bytes, then reading them
; expect: accept
r1 = 0
loop:
r2 = r10
r2 += -32
r2 += r1
*(u8 *)(r2 + 0) = 7
r1 += 1
if r1 < 32 goto loop
r0 = *(u64 *)(r10 - 32)
exit
