; sampling with get_prandom_u32
; expect: accept
call 7
r0 &= 7
if r0 == 0 goto drop
r0 = 2
exit
drop:
r0 = 1
exit
