; the check is on a pointer with a different variable part
; expect: reject "invalid access to packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 2
if r4 > r3 goto drop
r5 = *(u8 *)(r2 + 0)
r5 &= 15
r6 = *(u8 *)(r2 + 1)
r6 &= 15
r7 = r2
r7 += r5
r8 = r2
r8 += r6
r9 = r7
r9 += 1
if r9 > r3 goto drop
r0 = *(u8 *)(r8 + 0)
exit
drop:
r0 = 1
exit
