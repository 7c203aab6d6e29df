; sign-extending a pointer
; expect: reject "sign extension of a fp pointer"
r1 = r10
r2 = (s32)r1
r0 = 2
exit
