; csum_diff with a null buffer but a size
; expect: reject "null pointer needs a size of 0"
r1 = 0
r2 = 4
r3 = 0
r4 = 0
r5 = 0
call 28
r0 = 2
exit
