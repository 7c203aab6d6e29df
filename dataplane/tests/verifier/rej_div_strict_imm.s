; strict division by the constant 0
; expect: reject "division by constant 0"
; strict_div
r0 = 10
r0 /= 0
exit
