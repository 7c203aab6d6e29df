; a comparison with an unset register
; expect: reject "R7 !read_ok"
if r7 > 0 goto +1
r0 = 2
r0 = 1
exit
