module github.com/open-autoglm/autoglm

go 1.24
