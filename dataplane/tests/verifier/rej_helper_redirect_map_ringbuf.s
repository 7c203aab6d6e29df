; redirect_map on a ring buffer
; expect: reject "helper redirect_map arg1"
; maps: ringbuf 0 0 4096
r1 = map[0] ll
r2 = 0
r3 = 0
call 51
exit
