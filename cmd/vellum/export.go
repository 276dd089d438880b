package main

import "context"

func (m *Main) export(ctx context.Context, args []string) error {
	return errorf("", "export is not built yet")
}
