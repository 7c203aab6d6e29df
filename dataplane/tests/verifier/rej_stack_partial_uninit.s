; 4 of 8 bytes written
; expect: reject "byte at fp-8 is not initialised"
*(u32 *)(r10 - 4) = 1
r0 = *(u64 *)(r10 - 8)
exit
