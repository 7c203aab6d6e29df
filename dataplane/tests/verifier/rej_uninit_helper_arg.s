; a helper argument never set
; expect: reject "R2 !read_ok"
; maps: hash 4 8 16
r1 = map[0] ll
call 1
r0 = 2
exit
