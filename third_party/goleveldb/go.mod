module github.com/pingcap/goleveldb

go 1.13

require github.com/golang/snappy v0.0.4
