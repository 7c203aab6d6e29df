; strict division by a non-zero constant
; expect: accept
; strict_div
r0 = 100
r0 /= 4
w0 %= 3
exit
