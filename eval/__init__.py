"""oripid.eval"""
