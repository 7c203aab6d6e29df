; 32-bit arithmetic zero-extends
; expect: accept
w1 = -1
r1 >>= 32
w0 = 5
w0 += w1
w0 &= 7
w0 <<= 2
w0 s>>= 1
exit
