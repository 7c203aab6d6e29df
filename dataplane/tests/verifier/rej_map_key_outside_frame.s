; a 4-byte key starting 2 bytes below the frame top
; expect: reject "outside the 512-byte frame"
; maps: hash 4 8 16
*(u16 *)(r10 - 2) = 1
r2 = r10
r2 += -2
r1 = map[0] ll
call 1
r0 = 2
exit
