; a spilled constant comes back exact and bounds a stack index
; expect: accept
r1 = 3
*(u64 *)(r10 - 8) = r1
*(u64 *)(r10 - 16) = 0
r2 = *(u64 *)(r10 - 8)
r3 = r10
r3 += -16
r3 += r2
r0 = *(u8 *)(r3 + 0)
exit
