; exit without setting r0
; expect: reject "R0 !read_ok"
r1 = 1
exit
