	# The exception tag LLVM's wasm setjmp/longjmp lowering throws and catches
	# (-mllvm -wasm-enable-sjlj). wasi-libc declares it but defines it nowhere:
	# the program that uses setjmp must, once.
	.tagtype __c_longjmp i32
	.globl __c_longjmp
__c_longjmp:
