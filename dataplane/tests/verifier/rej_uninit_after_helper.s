; helpers clobber r1-r5
; expect: reject "R1 !read_ok"
r1 = 1
call 5
r0 = r1
exit
