; r6-r9 survive a call; the callee sees only r1-r5
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r6 = r2
r7 = r3
call f
r4 = r6
r4 += 1
if r4 > r7 goto drop
r0 = *(u8 *)(r6 + 0)
exit
drop:
r0 = 1
exit
f:
r0 = 0
exit
