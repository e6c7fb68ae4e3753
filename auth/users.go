package auth

// HasUser reports whether user is in the current htpasswd file, so a web
// session (package ui) ends when its user is removed.
func (s *Service) HasUser(user string) bool { return s.v.hasUser(user) }
