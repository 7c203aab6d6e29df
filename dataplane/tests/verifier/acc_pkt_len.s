; data_end - data as a length
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r3
r4 -= r2
if r4 < 60 goto drop
r0 = 2
exit
drop:
r0 = 1
exit
