//go:build !linux

package main

const fileLimitEnv = "VELLUM_TEST_FSIZE"

func applyTestFileLimit() {}
