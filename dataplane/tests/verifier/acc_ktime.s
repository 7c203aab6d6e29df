; ktime_get_ns result used as a scalar
; expect: accept
call 5
r0 &= 1
r0 += 1
exit
