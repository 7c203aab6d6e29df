; negating a pointer
; expect: reject "neg on a pkt pointer prohibited"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r2 = -r2
r0 = 2
exit
