; strict modulo by a register that may be 0
; expect: reject "division by zero: R1 may be 0"
; strict_div
call 7
r1 = r0
r0 = 7
w0 %= w1
exit
