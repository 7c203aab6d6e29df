; negating constants
; expect: accept
r0 = 5
r0 = -r0
r0 += 7
w1 = 3
w1 = -w1
exit
