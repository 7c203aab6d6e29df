; csum_diff with a null "from" and 4 stack bytes "to"
; expect: accept
*(u32 *)(r10 - 4) = 0x12345678
r1 = 0
r2 = 0
r3 = r10
r3 += -4
r4 = 4
r5 = 0
call 28
r0 = 2
exit
