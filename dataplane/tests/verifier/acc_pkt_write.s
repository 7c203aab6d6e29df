; writing a scalar into the checked packet
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 6
if r4 > r3 goto drop
r5 = 0xff
*(u8 *)(r2 + 0) = r5
*(u32 *)(r2 + 2) = 7
r0 = 3
exit
drop:
r0 = 1
exit
