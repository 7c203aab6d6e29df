; a copy of a variable packet pointer learns from the check on the original
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 1
if r4 > r3 goto drop
r5 = *(u8 *)(r2 + 0)
r5 &= 31
r6 = r2
r6 += r5
r7 = r6
r8 = r6
r8 += 2
if r8 > r3 goto drop
r0 = *(u16 *)(r7 + 0)
exit
drop:
r0 = 2
exit
