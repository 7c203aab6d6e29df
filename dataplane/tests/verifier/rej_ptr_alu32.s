; 32-bit arithmetic on a pointer
; expect: reject "32-bit pointer arithmetic prohibited"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
w2 += 1
r0 = 2
exit
