package server

// exportRoutes registers what export bundles need.
func (s *Server) exportRoutes() {}
