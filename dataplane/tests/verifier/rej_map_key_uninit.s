; the lookup key was never written
; expect: reject "is not initialised"
; maps: hash 4 8 16
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
r0 = 2
exit
