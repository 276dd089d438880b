package main

import "context"

func (m *Main) tail(ctx context.Context, args []string) error {
	return errorf("", "tail is not built yet")
}
