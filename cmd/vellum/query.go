package main

import "context"

func (m *Main) query(ctx context.Context, args []string) error {
	return errorf("", "query is not built yet")
}

func (m *Main) index(ctx context.Context, args []string) error {
	return errorf("", "index is not built yet")
}
