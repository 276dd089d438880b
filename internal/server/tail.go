package server

// tailRoutes registers the live tail (Server-Sent Events).
func (s *Server) tailRoutes() {}
