"""oripid.builders"""
