; 4 bytes of a pointer spilled
; expect: reject "invalid spill"
*(u32 *)(r10 - 4) = r10
r0 = 2
exit
