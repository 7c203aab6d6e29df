; reading a register never written
; expect: reject "R5 !read_ok"
r0 = r5
exit
