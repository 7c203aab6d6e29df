; bytes written are readable, at every size
; expect: accept
*(u32 *)(r10 - 4) = 1
*(u16 *)(r10 - 6) = 2
*(u8 *)(r10 - 7) = 3
*(u8 *)(r10 - 8) = 4
r0 = *(u64 *)(r10 - 8)
r1 = *(u8 *)(r10 - 7)
r0 += r1
exit
