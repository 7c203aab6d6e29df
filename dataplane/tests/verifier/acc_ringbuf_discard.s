; reserve then discard
; expect: accept
; maps: ringbuf 0 0 4096
r1 = map[0] ll
r2 = 8
r3 = 0
call 131
if r0 != 0 goto got
r0 = 2
exit
got:
r1 = r0
r2 = 0
call 133
r0 = 2
exit
