; masking a stack pointer
; expect: reject "&= on a fp pointer prohibited"
r1 = r10
r1 &= -8
r0 = 2
exit
