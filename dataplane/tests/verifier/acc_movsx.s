; sign-extending moves
; expect: accept
r1 = 0xff
r2 = (s8)r1
w3 = (s16)w1
r0 = (s32)r1
r0 = 2
exit
