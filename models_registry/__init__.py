"""oripid.models_registry"""
