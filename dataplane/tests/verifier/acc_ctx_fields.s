; every scalar xdp_md field
; expect: accept
r2 = *(u32 *)(r1 + 12)
r3 = *(u32 *)(r1 + 16)
r4 = *(u32 *)(r1 + 20)
r0 = r2
r0 += r3
r0 += r4
r0 &= 3
exit
