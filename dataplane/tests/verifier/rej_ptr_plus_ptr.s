; adding two pointers
; expect: reject "pointer += pointer prohibited"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r2 += r3
r0 = 2
exit
