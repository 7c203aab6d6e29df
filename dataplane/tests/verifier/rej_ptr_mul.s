; multiplying a pointer
; expect: reject "*= on a pkt pointer prohibited"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r2 *= 2
r0 = 2
exit
