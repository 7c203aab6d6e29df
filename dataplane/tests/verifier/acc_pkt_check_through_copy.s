; the check is made on the advanced pointer, the load through data itself
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r5 = r2
r5 += 34
if r5 > r3 goto drop
r0 = *(u32 *)(r2 + 30)
r6 = *(u8 *)(r2 + 23)
r0 += r6
exit
drop:
r0 = 1
exit
