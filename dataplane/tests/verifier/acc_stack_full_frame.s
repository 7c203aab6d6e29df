; the deepest and the highest stack byte
; expect: accept
*(u8 *)(r10 - 512) = 1
*(u8 *)(r10 - 1) = 2
r0 = *(u8 *)(r10 - 512)
r1 = *(u8 *)(r10 - 1)
r0 += r1
exit
