; redirect to an interface index
; expect: accept
r1 = 3
r2 = 0
call 23
exit
