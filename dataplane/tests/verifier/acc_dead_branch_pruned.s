; a branch no value takes is not explored (its bad load never runs)
; expect: accept
r1 = 5
if r1 > 10 goto bad
r0 = 2
exit
bad:
r0 = *(u8 *)(r1 + 0)
exit
